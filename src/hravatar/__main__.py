from hravatar.cli import main

main()
