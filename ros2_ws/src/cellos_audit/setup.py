from setuptools import find_packages, setup

package_name = 'cellos_audit'

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
        'Audit of a cellos line: the MCAP recorder (rosbag2-compatible), the lineage query CLI and '
        'the report figures.'),
    license='Apache-2.0',
    extras_require={'test': ['pytest', 'hypothesis']},
    entry_points={
        'console_scripts': [
            'audit_recorder_node = cellos_audit.nodes.recorder_node:main',
            'cellos_lineage = cellos_audit.lineage_cli:main',
            'cellos_audit_report = cellos_audit.report_cli:main',
        ],
    },
)
