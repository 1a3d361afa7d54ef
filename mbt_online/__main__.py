from mbt_online.cli import main

main()
