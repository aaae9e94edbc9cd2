-- The unsent notifications a page at a time (id > the last one seen): in id order for the start's
-- rescue and a reload's re-plan, and by the mode they were planned for, in id order, for the
-- sweep at every change of mode (and every idle poll). Without them each page read every unsent
-- row through notifications_status and sorted them, 1.4 s a page with 300,000 held, so a long
-- outage's backlog kept the first pass after a restart going for minutes, past the systemd
-- watchdog, which killed the daemon again and again.
CREATE INDEX notifications_unsent ON notifications (id) WHERE status IN ('pending', 'held') AND pinned IS NULL;
CREATE INDEX notifications_unsent_mode ON notifications (mode, id)
    WHERE status IN ('pending', 'held') AND pinned IS NULL;
