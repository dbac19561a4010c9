from fanflow.cli import main

main()
