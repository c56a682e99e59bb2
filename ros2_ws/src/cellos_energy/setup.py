from setuptools import find_packages, setup

package_name = 'cellos_energy'

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
        'Energy gating: site energy feed (trace replay, OpenADR 2.0b VEN), per-cell gate policy and '
        'deferral.'),
    license='Apache-2.0',
    extras_require={'test': ['pytest', 'hypothesis']},
    entry_points={
        'console_scripts': [
            'energy_feed_node = cellos_energy.nodes.energy_feed_node:main',
            'energy_gate_node = cellos_energy.nodes.energy_gate_node:main',
        ],
    },
)
