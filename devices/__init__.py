"""Headset front ends: ThinkGear over serial, a simulated headset, and replayed recordings.

Every backend implements ``devices.base.Device`` and emits ``engine.records.Reading`` values.
"""
