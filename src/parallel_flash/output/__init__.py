"""The output layer: what a run shows and tells (publishers for a line of stations)."""
