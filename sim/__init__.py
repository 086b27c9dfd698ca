"""accelml.sim"""
