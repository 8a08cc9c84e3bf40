"""Forward passes: capture, generation, scoring, packed forwards, weight holding."""
