"""Command-line programs: fastbook, fastbook-broker, fastbook-sequencer, fastbook-edge."""
