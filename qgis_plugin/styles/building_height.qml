<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<!-- Buildings by height (m), from edifice:assignbuildingheight; NULL heights are not drawn -->
<qgis version="3.22.16" styleCategories="AllStyleCategories">
  <renderer-v2 type="graduatedSymbol" attr="height" graduatedMethod="GraduatedColor" symbollevels="0" enableorderby="0" forceraster="0">
    <ranges>
      <range lower="0" upper="3" symbol="0" label="0 – 3 m" render="true"/>
      <range lower="3" upper="6" symbol="1" label="3 – 6 m" render="true"/>
      <range lower="6" upper="10" symbol="2" label="6 – 10 m" render="true"/>
      <range lower="10" upper="15" symbol="3" label="10 – 15 m" render="true"/>
      <range lower="15" upper="25" symbol="4" label="15 – 25 m" render="true"/>
      <range lower="25" upper="50" symbol="5" label="25 – 50 m" render="true"/>
      <range lower="50" upper="10000" symbol="6" label="&gt; 50 m" render="true"/>
    </ranges>
    <symbols>
      <symbol type="fill" name="0" alpha="1" clip_to_extent="1" force_rhr="0"><layer class="SimpleFill" enabled="1" locked="0" pass="0"><prop k="color" v="255,255,204,255"/><prop k="outline_color" v="60,60,60,255"/><prop k="outline_width" v="0.2"/><prop k="style" v="solid"/></layer></symbol>
      <symbol type="fill" name="1" alpha="1" clip_to_extent="1" force_rhr="0"><layer class="SimpleFill" enabled="1" locked="0" pass="0"><prop k="color" v="199,233,180,255"/><prop k="outline_color" v="60,60,60,255"/><prop k="outline_width" v="0.2"/><prop k="style" v="solid"/></layer></symbol>
      <symbol type="fill" name="2" alpha="1" clip_to_extent="1" force_rhr="0"><layer class="SimpleFill" enabled="1" locked="0" pass="0"><prop k="color" v="127,205,187,255"/><prop k="outline_color" v="60,60,60,255"/><prop k="outline_width" v="0.2"/><prop k="style" v="solid"/></layer></symbol>
      <symbol type="fill" name="3" alpha="1" clip_to_extent="1" force_rhr="0"><layer class="SimpleFill" enabled="1" locked="0" pass="0"><prop k="color" v="65,182,196,255"/><prop k="outline_color" v="60,60,60,255"/><prop k="outline_width" v="0.2"/><prop k="style" v="solid"/></layer></symbol>
      <symbol type="fill" name="4" alpha="1" clip_to_extent="1" force_rhr="0"><layer class="SimpleFill" enabled="1" locked="0" pass="0"><prop k="color" v="44,127,184,255"/><prop k="outline_color" v="60,60,60,255"/><prop k="outline_width" v="0.2"/><prop k="style" v="solid"/></layer></symbol>
      <symbol type="fill" name="5" alpha="1" clip_to_extent="1" force_rhr="0"><layer class="SimpleFill" enabled="1" locked="0" pass="0"><prop k="color" v="37,52,148,255"/><prop k="outline_color" v="60,60,60,255"/><prop k="outline_width" v="0.2"/><prop k="style" v="solid"/></layer></symbol>
      <symbol type="fill" name="6" alpha="1" clip_to_extent="1" force_rhr="0"><layer class="SimpleFill" enabled="1" locked="0" pass="0"><prop k="color" v="8,29,88,255"/><prop k="outline_color" v="60,60,60,255"/><prop k="outline_width" v="0.2"/><prop k="style" v="solid"/></layer></symbol>
    </symbols>
  </renderer-v2>
</qgis>
