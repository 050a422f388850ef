from shaping.cli import main

main()
