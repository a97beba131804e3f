"""Host to device: ``edgecls deploy`` and ``edgecls bench --remote`` over the system OpenSSH client.

No TensorFlow here either: this layer uses ``edgecls.core`` and ``edgecls.runtime`` only.
"""
