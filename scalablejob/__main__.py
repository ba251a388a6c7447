from scalablejob.cli import main

main()
