from glob import glob

from setuptools import find_packages, setup

package_name = 'cellos_bringup'

setup(
    name=package_name,
    version='0.2.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        ('share/' + package_name + '/config', glob('config/*.yaml') + glob('config/*.rviz') + glob('config/*.csv')),
        ('share/' + package_name + '/config/security', glob('config/security/*')),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='cellos developers',
    maintainer_email='dev@cellos.invalid',
    description=(
        'Bring-up of a cellos line: launch files, parameter files, the launch plan and the line_runner '
        'runner.'),
    license='Apache-2.0',
    extras_require={'test': ['pytest', 'hypothesis']},
    entry_points={
        'console_scripts': [
            'line_runner = cellos_bringup.runner:main',
        ],
    },
)
