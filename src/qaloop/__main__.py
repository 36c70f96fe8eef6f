from qaloop.cli import main

main()
