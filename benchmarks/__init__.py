"""tinker_nb benchmarks: the cost of privacy and security, measured side by side (`make bench`)."""
