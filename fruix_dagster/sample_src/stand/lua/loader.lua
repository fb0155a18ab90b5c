-- loader.lua: entry point of the sample tree's stand-in Lua loader.
local config = require("config")
local core = require("core")
local menu = require("menu")

config.load()
if core.isSingleUserBoot() then
	core.setSingleUser(true)
end
if not core.isMenuSkipped() then
	menu.run()
else
	core.autoboot()
end
