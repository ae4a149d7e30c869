//! Progress: a TTY line, plain log lines, or --json events.
