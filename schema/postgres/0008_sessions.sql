-- Issue 12: console sessions end after an idle time as well as at their
-- absolute expiry (`expires_at`); `last_seen_at` is refreshed at most once a
-- minute while the session is used.
ALTER TABLE web_sessions ADD COLUMN last_seen_at BIGINT NOT NULL DEFAULT 0;
UPDATE web_sessions SET last_seen_at = created_at;
