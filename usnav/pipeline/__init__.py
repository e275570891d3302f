"""The live pipeline: source → calibration → registration worker → margins → publisher."""
