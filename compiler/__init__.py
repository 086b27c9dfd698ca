"""accelml.compiler"""
