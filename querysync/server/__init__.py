"""An embedded NodeTool-compatible server: the real backend's /ws and REST behaviour, in memory."""
