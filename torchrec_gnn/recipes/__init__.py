"""Job scripts: one readable file per job (train, compare), each with an importable main(argv)."""
