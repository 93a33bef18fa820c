"""What people use, each a thin shell over the layers below: the command line (`cli`, a module per
command), the Python API (`python_api`: `engine.load_policies`, `engine.check`), the HTML portfolio
report (`report`), `kam test` (`policy_tests`), `kam diff` (`diff`) and the problem formats of
`kam check` (`problems`: text, JSON, GitHub annotations, JUnit).
"""
