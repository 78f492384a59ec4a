from clood_candy.cli import main

main()
