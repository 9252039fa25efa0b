"""The cutover's parts that follow the phase."""
