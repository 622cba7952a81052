"""Speed and quality benchmarks for progan. Run each from the repository root as a module, e.g.
`python -m benchmarks.train_speed --help`; benchmarks/README.md lists them with their current tables."""
