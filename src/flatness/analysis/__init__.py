"""Statistics on the study table: rank correlations (Kendall tau, granulated Psi), verdicts."""
