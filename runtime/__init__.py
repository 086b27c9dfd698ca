"""accelml.runtime"""
