from setuptools import find_packages, setup

package_name = 'cellos_common'

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
        'Common base of the cellos packages: parameter specs, lifecycle node base, QoS table, '
        'diagnostics, lifecycle client and manager.'),
    license='Apache-2.0',
    extras_require={'test': ['pytest', 'hypothesis']},
    entry_points={
        'console_scripts': [
            'lifecycle_manager = cellos_common.nodes.lifecycle_manager_node:main',
        ],
    },
)
