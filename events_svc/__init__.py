"""The events service: LogEvents validates behavioural events and appends them to the durable event log."""
