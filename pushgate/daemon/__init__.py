"""The loops that drive the stages: a branch's whole cycle (gate stages, report, mail,
bisection requests), bisections, mail and retention, and `pushgate daemon` running them."""
