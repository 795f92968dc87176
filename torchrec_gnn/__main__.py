from torchrec_gnn.cli import main

main()
