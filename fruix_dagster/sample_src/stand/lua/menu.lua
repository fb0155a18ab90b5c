-- menu.lua: the boot menu (sample stand-in).
local core = require("core")
local menu = {}

function menu.run()
	print("1. Boot Multi user [Enter]")
	print("2. Boot Single user")
	core.autoboot()
end

return menu
