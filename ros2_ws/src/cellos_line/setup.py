from setuptools import find_packages, setup

package_name = 'cellos_line'

setup(
    name=package_name,
    version='0.2.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='cellos developers',
    maintainer_email='dev@cellos.invalid',
    description=(
        'Line timing and flow: cell cycle clock, clock sync, line coordinator, backpressure, plant '
        'simulation.'),
    license='Apache-2.0',
    extras_require={'test': ['pytest', 'hypothesis']},
    entry_points={
        'console_scripts': [
            'timing_node = cellos_line.nodes.timing_node:main',
            'coordinator_node = cellos_line.nodes.coordinator_node:main',
            'plant_node = cellos_line.nodes.plant_node:main',
        ],
    },
)
