"""The method: size policies, crop geometry, FixRes maths and fine-tuning, the training engine."""
