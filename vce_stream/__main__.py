from vce_stream.cli import main

main()
