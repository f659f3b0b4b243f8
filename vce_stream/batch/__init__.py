"""Archives: many exams scored by a local worker pool or Ray tasks, resumable through a journal."""
