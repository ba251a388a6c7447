from scalablejob.cli.main import main

main()
