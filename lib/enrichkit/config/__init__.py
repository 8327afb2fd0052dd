"""What a run is asked to do: options, plan, stages file, placeholders, prices, model facts, keys, .env."""
