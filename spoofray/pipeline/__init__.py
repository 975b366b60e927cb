"""Ray Data stages. The only spoofray package besides ``training`` that imports Ray."""
