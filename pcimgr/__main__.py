from pcimgr.cli import main

main()
