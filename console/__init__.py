"""The web console (product/design view of what the models do). Not built yet: see the open issues."""
