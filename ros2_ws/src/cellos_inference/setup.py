from setuptools import find_packages, setup

package_name = 'cellos_inference'

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
    description='Shared inference executor (TensorRT, ONNX Runtime on CPU) and the per-cell arbiter.',
    license='Apache-2.0',
    extras_require={'test': ['pytest', 'hypothesis']},
    entry_points={
        'console_scripts': [
            'executor_node = cellos_inference.nodes.executor_node:main',
            'arbiter_node = cellos_inference.nodes.arbiter_node:main',
            'rollout_controller_node = cellos_inference.nodes.rollout_controller_node:main',
        ],
    },
)
