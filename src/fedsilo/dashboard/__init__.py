"""`fedsilo dashboard`: a local web page over the run store."""
