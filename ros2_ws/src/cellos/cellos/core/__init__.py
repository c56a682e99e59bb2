"""Pure logic of cellos: no rclpy import anywhere below this package."""
