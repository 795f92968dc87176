"""Models composed from the modules: GraphDLRM and its training wrapper."""
