"""Where alerts go: the terminal (no Slack configured) and Slack."""
