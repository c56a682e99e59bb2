from setuptools import find_packages, setup

package_name = 'cellos_vision'

setup(
    name=package_name,
    version='0.2.0',
    packages=find_packages(exclude=['test']),
    package_data={'cellos_vision': ['models/*.onnx', 'models/*.json']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='cellos developers',
    maintainer_email='dev@cellos.invalid',
    description=(
        'Cell vision: cameras, preprocessing, inspection verdicts, drift monitor and the shipped '
        'inspection models.'),
    license='Apache-2.0',
    extras_require={'test': ['pytest', 'hypothesis']},
    entry_points={
        'console_scripts': [
            'vision_node = cellos_vision.nodes.vision_node:main',
            'review_queue_node = cellos_vision.nodes.review_queue_node:main',
        ],
    },
)
