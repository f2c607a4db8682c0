-- The tutorial's fourth example: running system commands with subprocess.
-- The original asks nslookup about www.baidu.com, then feeds an interactive
-- nslookup its commands on stdin.  There is no network here, so the same
-- two steps make a name-service lookup that needs none (getent asks for
-- the user root, who is in /etc/passwd on every system), and feed sh its
-- commands.
local subprocess = require("mproc").subprocess

print("$ getent passwd root")
local r = subprocess.call({"getent", "passwd", "root"}, {text = true, encoding = "utf-8"})
print("Exit code:", r)

print("$ sh")
local p = subprocess.Popen({"sh"}, {stdin = subprocess.PIPE, stdout = subprocess.PIPE,
                                    stderr = subprocess.PIPE})
local output, err = p:communicate("set -- root\ngetent passwd \"$1\"\nexit\n")
print(output)
if err ~= "" then io.stderr:write(err) end
print("Exit code:", p.returncode)
