"""Thin rclpy shells around cellos.core."""
