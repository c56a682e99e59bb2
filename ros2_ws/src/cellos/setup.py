from glob import glob
import os

from setuptools import find_packages, setup

package_name = 'cellos'
repo = os.path.relpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..'))


def shared(subdir, pattern):
    files = sorted(glob(os.path.join(repo, subdir, pattern)))
    return (os.path.join('share', package_name, subdir), files)


setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    package_data={'cellos': ['models/*.onnx', 'models/*.json']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        shared('launch', '*.launch.py'),
        shared('config', '*.yaml'),
        shared('config', '*.rviz'),
        shared('config', '*.csv'),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='cellos developers',
    maintainer_email='dev@cellos.invalid',
    description='Cell-level operating layer for AI-driven factory lines.',
    license='Apache-2.0',
    extras_require={'test': ['pytest', 'hypothesis']},
    entry_points={
        'console_scripts': [
            'timing_node = cellos.nodes.timing_node:main',
            'coordinator_node = cellos.nodes.coordinator_node:main',
            'executor_node = cellos.nodes.executor_node:main',
            'arbiter_node = cellos.nodes.arbiter_node:main',
            'vision_node = cellos.nodes.vision_node:main',
            'energy_feed_node = cellos.nodes.energy_feed_node:main',
            'energy_gate_node = cellos.nodes.energy_gate_node:main',
            'lifecycle_manager = cellos.nodes.lifecycle_manager_node:main',
            'cellos_line = cellos.runner:main',
            'plant_node = cellos.nodes.plant_node:main',
        ],
    },
)
