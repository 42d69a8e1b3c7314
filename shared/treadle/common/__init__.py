"""What both services and the client share: errors, status mapping, telemetry."""
