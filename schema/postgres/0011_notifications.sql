-- Issue 13: the notification configuration set through REST (/api/v1/receivers,
-- /api/v1/routes): one row (id = 1) holding the route tree and the receivers as
-- JSON (NotifyConfig), webhook secrets and SMTP passwords encrypted with the
-- manager's secrets key (enc:v1:...). A route with no receiver means no route
-- tree is set yet (alerts are not sent).
CREATE TABLE notification_config (
    id         BIGINT PRIMARY KEY,
    config     TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL
);
