-- Attempts say what started them: the schedule, or a manual replay.
ALTER TABLE attempts ADD COLUMN trigger text NOT NULL DEFAULT 'scheduled';
